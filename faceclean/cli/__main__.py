from faceclean.cli import main

main()
