from services.budget.main import main

main()
