from services.eligibility.app import main

main()
