from nimflow.cli import main

main()
