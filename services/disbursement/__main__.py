from services.disbursement.app import main

main()
