"""stub"""

NAME = "async"


def run(opts):
    raise NotImplementedError
