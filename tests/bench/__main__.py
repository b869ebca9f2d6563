"""`make bench`: every benchmark, each printing its own table of figures."""

from tests.bench import bus, embedding, first_request, objects, predictor, preprocess, similarity, trainer


def main() -> None:
    bus.main()
    objects.main()
    preprocess.main()
    embedding.main()
    similarity.main()
    trainer.main()
    predictor.main()
    first_request.main([])


if __name__ == "__main__":
    main()
