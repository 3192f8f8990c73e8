from enginefab.cli.main import app

app()
