"""Block forms: the typed matchers of one decoder block and the wide-block builders of a parallel group."""
