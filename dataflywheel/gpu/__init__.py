"""GPU planning: whether a run's GPU workers fit, decided from the run spec before anything
starts.

Runs in: anywhere (pure), except :func:`~dataflywheel.gpu.model_config.read_model_config`,
which reads a local model folder's ``config.json``. The memory plan (``flywheel plan``, and
the check before ``flywheel run`` and ``POST /runs``): ``shape`` turns a Hugging Face config
into sizes (parameters, KV cache per token, LoRA parameters), ``model_config`` finds the
config of a spec's model, ``generation_memory`` and ``training_memory`` estimate one worker
each on its GPU (``worker_plan`` holds their result type), and ``memory_plan`` gathers them
into a verdict.
"""
