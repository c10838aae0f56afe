// `statetune datasets ...` and `statetune jobs ...`: the statetune-train commands of the CLI.
#pragma once

namespace statetune::cli {

int cmd_datasets(int argc, char** argv);
int cmd_jobs(int argc, char** argv);

}  // namespace statetune::cli
