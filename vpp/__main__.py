from vpp.cli.main import main

main()
