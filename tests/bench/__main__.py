"""`make bench`: every benchmark, each printing its own table of figures."""

from tests.bench import bus, objects


def main() -> None:
    bus.main()
    objects.main()


if __name__ == "__main__":
    main()
