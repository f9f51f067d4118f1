# fmstore in a notebook: your own ids (text) and scale (1-10), fitted, asked, explained, published.
import pandas as pd

import fmstore

ratings = pd.read_csv("../shared/data/ml-latest-small/ratings.csv")
ratings = ratings.assign(user="u" + ratings.userId.astype(str), stars=ratings.rating * 2)
ratings = ratings.assign(movie="m" + ratings.movieId.astype(str))
movies = pd.read_csv("../shared/data/ml-latest-small/movies.csv")
movies = movies.assign(movie="m" + movies.movieId.astype(str))
model = fmstore.fit(ratings, movies, user_col="user", item_col="movie", rating_col="stars")
ids, scores = model.recommend("u1", N=5)  # straight from the run folder, in your ids
print(model.titles(ids), model.explain("u1", ids[:2]), model.predict("u1", "m1"))
print(model.similar_items("Toy Story", N=5))  # a title wherever a movie is
live = fmstore.publish(model)  # Qdrant + the catalog, switched in one step
print(live.recommend_for_ratings({"Toy Story": 9, "Alien": 8}, N=5))
