# jobchain's shared test fixtures (clock, make_job), for the conformance suite
pytest_plugins = ["jobchain.testing"]
