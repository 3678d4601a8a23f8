from wa_webhooks.main import main

main()
