"""The API's routers, one module per noun: runs, samples, checkpoints/datasets, health, ui."""
