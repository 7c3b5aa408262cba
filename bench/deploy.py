"""stub"""

NAME = "deploy"


def run(opts):
    raise NotImplementedError
