"""Tasks and a chain the gateway's tests submit by name (``jobchain http serve --config``)."""

from jobchain import App, chain

app = App()


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task
def double(n: int) -> int:
    return 2 * n


@app.task
def echo(text: str) -> str:
    return text


@app.task
def secret() -> str:
    """Declared, but not on the tests' allow-list."""
    return "classified"


pipeline = chain(add, double, name="pipeline")
