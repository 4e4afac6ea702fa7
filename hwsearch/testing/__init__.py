"""Contract test suites a new model family or latency predictor must pass (pytest classes to subclass).

In the spirit of Optuna's ``optuna.testing``: write a test class that inherits the contract and
provides its fixtures, e.g. ::

    from hwsearch.testing.contracts import FamilyContract

    class TestMyFamily(FamilyContract):
        @pytest.fixture
        def ctx(self):
            return hwsearch.context.build("my_task", "my_model")
"""
