from wa_gateway.main import main

main()
