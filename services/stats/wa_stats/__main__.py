from wa_stats.main import main

main()
