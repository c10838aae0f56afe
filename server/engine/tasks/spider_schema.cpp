#include "server/engine/tasks/spider_schema.h"

#include <nlohmann/json.hpp>

#include <stdexcept>

#include "server/engine/tasks/text_files.h"

namespace statetune::tasks {
namespace {

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

// Some releases of tables.json list a composite primary key as a nested array.
void collect_ints(const nlohmann::json& j, std::vector<int>& out) {
  if (j.is_array()) {
    for (const auto& e : j) collect_ints(e, out);
  } else {
    out.push_back(j.get<int>());
  }
}

}  // namespace

std::string SpiderSchema::column_id(int column) const {
  const SpiderColumn& c = columns.at(static_cast<size_t>(column));
  if (c.table < 0) return "__all__";
  return "__" + lower(table_names.at(static_cast<size_t>(c.table))) + "." + lower(c.name) + "__";
}

SpiderSchemaSet SpiderSchemaSet::load(const std::string& tables_json_path) {
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(read_text_file(tables_json_path));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("'" + tables_json_path + "' is not valid JSON: " + e.what());
  }
  if (!root.is_array()) throw std::runtime_error("'" + tables_json_path + "' must hold a JSON array of schemas");
  SpiderSchemaSet set;
  for (size_t i = 0; i < root.size(); ++i) {
    const auto& entry = root[i];
    try {
      SpiderSchema schema;
      schema.db_id = entry.at("db_id").get<std::string>();
      schema.table_names = entry.at("table_names_original").get<std::vector<std::string>>();
      const auto& cols = entry.at("column_names_original");
      const auto& types = entry.at("column_types");
      if (cols.size() != types.size()) throw std::runtime_error("column_names_original and column_types differ in length");
      for (size_t c = 0; c < cols.size(); ++c) {
        SpiderColumn column;
        column.table = cols[c].at(0).get<int>();
        column.name = cols[c].at(1).get<std::string>();
        column.type = types[c].get<std::string>();
        if (column.table >= static_cast<int>(schema.table_names.size())) {
          throw std::runtime_error("column " + std::to_string(c) + " names table " + std::to_string(column.table) +
                                   " of " + std::to_string(schema.table_names.size()));
        }
        schema.columns.push_back(std::move(column));
      }
      collect_ints(entry.at("primary_keys"), schema.primary_keys);
      for (const auto& fk : entry.at("foreign_keys")) {
        schema.foreign_keys.emplace_back(fk.at(0).get<int>(), fk.at(1).get<int>());
      }
      std::string db_id = schema.db_id;
      set.schemas_.emplace(std::move(db_id), std::move(schema));
    } catch (const std::exception& e) {
      throw std::runtime_error("'" + tables_json_path + "' entry " + std::to_string(i) + ": " + e.what());
    }
  }
  return set;
}

const SpiderSchema& SpiderSchemaSet::at(const std::string& db_id) const {
  const auto it = schemas_.find(db_id);
  if (it == schemas_.end()) {
    throw std::out_of_range("Spider database '" + db_id + "' is not in tables.json; check the example's db_id");
  }
  return it->second;
}

std::string describe_schema(const SpiderSchema& schema) {
  std::string out;
  for (size_t t = 0; t < schema.table_names.size(); ++t) {
    if (!out.empty()) out += '\n';
    out += schema.table_names[t] + ": ";
    bool first = true;
    for (const auto& c : schema.columns) {
      if (c.table != static_cast<int>(t)) continue;
      if (!first) out += ", ";
      first = false;
      out += c.name + " (" + c.type + ")";
    }
    std::string keys;
    for (const int k : schema.primary_keys) {
      if (schema.columns.at(static_cast<size_t>(k)).table != static_cast<int>(t)) continue;
      keys += (keys.empty() ? "" : ", ") + schema.columns[static_cast<size_t>(k)].name;
    }
    if (!keys.empty()) out += " | primary key: " + keys;
    std::string foreign;
    for (const auto& [from, to] : schema.foreign_keys) {
      const auto& f = schema.columns.at(static_cast<size_t>(from));
      const auto& r = schema.columns.at(static_cast<size_t>(to));
      if (f.table != static_cast<int>(t) || r.table < 0) continue;
      foreign += (foreign.empty() ? "" : ", ") + f.name + " -> " +
                 schema.table_names.at(static_cast<size_t>(r.table)) + "." + r.name;
    }
    if (!foreign.empty()) out += " | foreign keys: " + foreign;
  }
  return out;
}

}  // namespace statetune::tasks
