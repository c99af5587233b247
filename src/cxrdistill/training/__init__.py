"""Training: the loop, the supervised objective and its class weights."""
