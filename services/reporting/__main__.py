from services.reporting.app import main

main()
