"""A plugin for the tests that cannot be imported: ``jobchain backends`` must say so and carry on."""

raise ImportError("jobchain_broken needs libfoo, which is not installed")
