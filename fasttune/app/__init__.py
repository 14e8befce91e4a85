"""Looking at a model: the one adapter between the app/serve front ends and fasttune's model loaders (`models`)."""
