from wa_auth.main import main

main()
