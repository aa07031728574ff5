"""The ``--device`` choices of the commands that run a model (no torch import: used for ``--help``)."""

DEVICES = ("auto", "cuda", "cpu")
DEVICE_HELP = ("where the model runs: auto (CUDA when torch can use a GPU, else the CPU: laptops), cuda (the "
               "GPU of each process, or stop at once with one line saying what torch and faiss see: GPU "
               "jobs), or cpu")


class GpuRequestError(ValueError):
    """A rule's GPU resources that Slurm would not give as the same GPUs to the job, its step and torchrun."""
