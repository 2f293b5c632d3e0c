"""A config for the scheduler process tests: ``tick`` every second (redis-lists via --backend)."""

from jobchain import App

app = App()


@app.periodic(every=1, missed="all", max_missed=5)
@app.task
def tick() -> None:
    """Nothing to do: the test counts the jobs the schedulers submit."""
