from pefm.cli import app

app()
