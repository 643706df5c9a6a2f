from vpp.cli.main import app

app()
