"""The comparison for bench/pages.py: a bare Flask route rendering a static template of the
same size as the preferences page, under the same gunicorn settings."""

from pathlib import Path

from flask import Flask, render_template

app = Flask(__name__, template_folder=str(Path(__file__).parent))


@app.get("/bare")
def bare() -> str:
    return render_template("same_size.html")
