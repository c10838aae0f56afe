// Database schemas of Spider from tables.json: what the prompts show the model and what the SQL parser
// resolves table and column names against (the official evaluation reads the same names from SQLite).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace statetune::tasks {

struct SpiderColumn {
  int table = -1;    // index into table_names; -1 for the "*" column
  std::string name;  // as in column_names_original
  std::string type;  // "text", "number", ...
};

struct SpiderSchema {
  std::string db_id;
  std::vector<std::string> table_names;  // table_names_original
  std::vector<SpiderColumn> columns;     // column_names_original; columns[0] is "*"
  std::vector<int> primary_keys;         // column indices
  std::vector<std::pair<int, int>> foreign_keys;  // (column, referenced column)

  // The evaluator's identifiers: "__table.column__" (lowercase) of column i, "__all__" for "*".
  std::string column_id(int column) const;
};

class SpiderSchemaSet {
 public:
  // tables.json: [{db_id, table_names_original, column_names_original, column_types, primary_keys,
  // foreign_keys}, ...]. Throws std::runtime_error naming the file and the entry when a field is missing.
  static SpiderSchemaSet load(const std::string& tables_json_path);

  // Throws std::out_of_range naming the db_id when it is unknown.
  const SpiderSchema& at(const std::string& db_id) const;
  bool contains(const std::string& db_id) const { return schemas_.count(db_id) > 0; }
  size_t size() const { return schemas_.size(); }

 private:
  std::map<std::string, SpiderSchema> schemas_;
};

// The schema as the prompt shows it, one table per line: "table: col1 (type), col2 (type) | primary key:
// col1 | foreign keys: col -> other_table.col".
std::string describe_schema(const SpiderSchema& schema);

}  // namespace statetune::tasks
