"""Small helpers shared by the entry points: config resolvers, instantiation, run files."""
