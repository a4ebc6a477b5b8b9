from psearch.cli import main

main()
