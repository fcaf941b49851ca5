"""The DP generator at its smallest (one epoch, 16-unit networks): for tests that need it to run
end to end, not to be good. Importable from every test module (pytest puts ``tests/`` on
``sys.path``)."""

FAST = {"epochs": 1.0, "sample_rate": 0.25, "generator_dims": (16,), "discriminator_dims": (16,),
        "noise_dim": 8, "progress": False}
