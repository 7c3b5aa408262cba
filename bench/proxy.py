"""stub"""

NAME = "proxy"


def run(opts):
    raise NotImplementedError
