from psearch.cli.main import main

main()
