from wa_session_worker.main import main

main()
