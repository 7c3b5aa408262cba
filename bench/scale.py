"""stub"""

NAME = "scale"


def run(opts):
    raise NotImplementedError
