pytest_plugins = ["linegate.testing.fixtures"]
