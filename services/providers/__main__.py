from services.providers.main import main

main()
