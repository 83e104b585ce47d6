"""Errors of the training core. Each message names the problem and the fix; the nodes prefix their id."""


class TrainingError(RuntimeError):
    """Training cannot start or cannot go on."""


class TrainingInputError(TrainingError, ValueError):
    """A bad input: no or unusable images, an empty phrase, bad settings, an unsupported model."""


class TrainingDivergedError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint (if any) is kept."""

    def __init__(self, message: str, step: int, checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class TrainingOutOfMemoryError(TrainingError):
    """The device ran out of memory; the message lists the settings that need less."""


class TrainingResumeError(TrainingInputError):
    """A checkpoint that cannot be resumed with these inputs."""
