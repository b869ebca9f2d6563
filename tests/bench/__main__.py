"""`make bench`: every benchmark, each printing its own table of figures."""

from tests.bench import bus, objects, preprocess


def main() -> None:
    bus.main()
    objects.main()
    preprocess.main()


if __name__ == "__main__":
    main()
