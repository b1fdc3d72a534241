// titan-train: parse the command line and the config, then train.
#include <cstdio>

int main() { std::puts("titan-train: nothing yet"); return 0; }
