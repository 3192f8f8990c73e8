from enginefab.cli.main import main

main()
