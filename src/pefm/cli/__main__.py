from pefm.cli import main

main()
