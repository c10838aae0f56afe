// evaluation.py's exact-set match on the parsed queries: rebuild_sql_val (drop values), rebuild_sql_col
// (drop DISTINCT, map foreign-key columns), then eval_exact_match. Every partial component's F1 must be
// 1, which for the official get_scores means "the two sides agree as multisets", so the components are
// compared as multisets here.
#include "server/engine/tasks/spider_exact_match.h"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

namespace statetune::tasks {
namespace {

using spider::ColUnit;
using spider::Condition;
using spider::CondUnit;
using spider::Sql;
using spider::SqlPtr;
using spider::ValUnit;
using spider::Value;

// --- rebuild_sql_val: values become None except sub-queries, which are rebuilt recursively. FROM
// sub-queries are left as they are (the official code does not descend into them).

Condition drop_values(const Condition& cond);

SqlPtr drop_values(const SqlPtr& sql);

Sql drop_values(const Sql& sql) {
  Sql out = sql;
  out.from_conds = drop_values(sql.from_conds);
  out.where = drop_values(sql.where);
  out.having = drop_values(sql.having);
  out.intersect = drop_values(sql.intersect);
  out.union_ = drop_values(sql.union_);
  out.except_ = drop_values(sql.except_);
  return out;
}

SqlPtr drop_values(const SqlPtr& sql) { return sql ? std::make_shared<const Sql>(drop_values(*sql)) : nullptr; }

Value drop_value(const Value& v) {
  if (v.kind != Value::Kind::kSql) return Value{};
  Value out;
  out.kind = Value::Kind::kSql;
  out.sql = drop_values(v.sql);
  return out;
}

Condition drop_values(const Condition& cond) {
  Condition out = cond;
  for (CondUnit& u : out.units) {
    u.val1 = drop_value(u.val1);
    u.val2 = drop_value(u.val2);
  }
  return out;
}

// --- rebuild_sql_col: DISTINCT dropped, a column of a FROM table that takes part in a foreign key is
// replaced by the key's representative column.

struct ColumnRebuild {
  const std::set<std::string>& valid_columns;
  const std::map<std::string, std::string>& foreign_key_map;

  ColUnit col(const ColUnit& c) const {
    ColUnit out = c;
    const auto it = foreign_key_map.find(c.column);
    if (it != foreign_key_map.end() && valid_columns.count(c.column)) out.column = it->second;
    out.distinct = false;
    return out;
  }
  ValUnit val(const ValUnit& v) const {
    ValUnit out = v;
    out.col1 = col(v.col1);
    if (v.col2) out.col2 = col(*v.col2);
    return out;
  }
  Condition cond(const Condition& c) const {  // only the left-hand sides (values are gone already)
    Condition out = c;
    for (CondUnit& u : out.units) u.val_unit = val(u.val_unit);
    return out;
  }
  SqlPtr sql(const SqlPtr& s) const { return s ? std::make_shared<const Sql>(sql(*s)) : nullptr; }
  Sql sql(const Sql& s) const {
    Sql out = s;
    out.select_distinct = false;
    for (auto& item : out.select) item.second = val(item.second);
    out.from_conds = cond(s.from_conds);
    out.where = cond(s.where);
    for (ColUnit& g : out.group_by) g = col(g);
    for (ValUnit& o : out.order_by) o = val(o);
    out.having = cond(s.having);
    out.intersect = sql(s.intersect);
    out.union_ = sql(s.union_);
    out.except_ = sql(s.except_);
    return out;
  }
};

// build_foreign_key_map: foreign keys grouped into sets (a key joins the first set holding either of its
// columns; sets are not merged), every column of a set mapped to the set's lowest-index column.
std::map<std::string, std::string> foreign_key_map(const SpiderSchema& schema) {
  std::vector<std::set<int>> groups;
  for (const auto& [a, b] : schema.foreign_keys) {
    std::set<int>* group = nullptr;
    for (auto& g : groups) {
      if (g.count(a) || g.count(b)) {
        group = &g;
        break;
      }
    }
    if (!group) group = &groups.emplace_back();
    group->insert(a);
    group->insert(b);
  }
  std::map<std::string, std::string> map;
  for (const auto& g : groups) {
    const std::string representative = schema.column_id(*g.begin());
    for (const int c : g) map[schema.column_id(c)] = representative;
  }
  return map;
}

// build_valid_col_units: every column of the tables named in FROM (sub-queries do not count).
std::set<std::string> valid_columns(const Sql& sql, const SpiderSchema& schema) {
  std::set<std::string> tables;
  for (const auto& t : sql.from) {
    if (!t.sql) tables.insert(t.table.substr(0, t.table.size() - 2));  // "__t__" -> "__t"
  }
  std::set<std::string> columns;
  for (size_t i = 0; i < schema.columns.size(); ++i) {
    const std::string id = schema.column_id(static_cast<int>(i));
    const auto dot = id.find('.');
    if (dot != std::string::npos && tables.count(id.substr(0, dot))) columns.insert(id);
  }
  return columns;
}

template <typename T>
bool same_multiset(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  std::vector<bool> used(b.size(), false);
  for (const T& x : a) {
    bool found = false;
    for (size_t j = 0; j < b.size(); ++j) {
      if (!used[j] && b[j] == x) {
        used[j] = found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

std::set<std::string> keywords(const Sql& sql) {
  std::set<std::string> k;
  if (!sql.where.empty()) k.insert("where");
  if (!sql.group_by.empty()) k.insert("group");
  if (!sql.having.empty()) k.insert("having");
  if (sql.has_order_by) {
    k.insert(sql.order_direction);
    k.insert("order");
  }
  if (sql.limit) k.insert("limit");
  if (sql.except_) k.insert("except");
  if (sql.union_) k.insert("union");
  if (sql.intersect) k.insert("intersect");
  for (const Condition* c : {&sql.from_conds, &sql.where, &sql.having}) {
    for (const auto& conj : c->conjunctions)
      if (conj == "or") k.insert("or");
    for (const CondUnit& u : c->units) {
      if (u.negated) k.insert("not");
      if (u.op == spider::kIn) k.insert("in");
      if (u.op == spider::kLike) k.insert("like");
    }
  }
  return k;
}

std::string column_name_only(const std::string& id) {
  const auto dot = id.find('.');
  return dot == std::string::npos ? id : id.substr(dot + 1);
}

bool exact_match_rebuilt(const Sql& pred, const Sql& label);

// eval_IUEN: the same set operations, each pair matching exactly.
bool nested_match(const Sql& pred, const Sql& label) {
  int label_total = 0, pred_total = 0, matched = 0;
  for (auto member : {&Sql::intersect, &Sql::except_, &Sql::union_}) {
    const SqlPtr& p = pred.*member;
    const SqlPtr& l = label.*member;
    pred_total += p != nullptr;
    label_total += l != nullptr;
    if (p && l) matched += exact_match_rebuilt(*p, *l);
  }
  return pred_total == label_total && matched == pred_total;
}

bool exact_match_rebuilt(const Sql& pred, const Sql& label) {
  // select, select(no AGG)
  if (!same_multiset(pred.select, label.select)) return false;
  // where, where(no OP)
  if (!same_multiset(pred.where.units, label.where.units)) return false;
  // group(no Having): grouped column names without their tables
  std::vector<std::string> pred_group, label_group;
  for (const auto& g : pred.group_by) pred_group.push_back(column_name_only(g.column));
  for (const auto& g : label.group_by) label_group.push_back(column_name_only(g.column));
  if (!same_multiset(pred_group, label_group)) return false;
  // group: both or neither group; if both, the same columns in order and the same HAVING
  const bool pred_groups = !pred.group_by.empty(), label_groups = !label.group_by.empty();
  if (pred_groups != label_groups) return false;
  if (pred_groups) {
    std::vector<std::string> pred_columns, label_columns;
    for (const auto& g : pred.group_by) pred_columns.push_back(g.column);
    for (const auto& g : label.group_by) label_columns.push_back(g.column);
    if (pred_columns != label_columns || !(pred.having == label.having)) return false;
  }
  // order: both or neither order; if both, the same direction and expressions, and LIMIT on both or neither
  if (pred.has_order_by != label.has_order_by) return false;
  if (label.has_order_by &&
      !(pred.order_direction == label.order_direction && pred.order_by == label.order_by &&
        pred.limit.has_value() == label.limit.has_value()))
    return false;
  // and/or
  const std::set<std::string> pred_ao(pred.where.conjunctions.begin(), pred.where.conjunctions.end());
  const std::set<std::string> label_ao(label.where.conjunctions.begin(), label.where.conjunctions.end());
  if (pred_ao != label_ao) return false;
  if (!nested_match(pred, label)) return false;
  if (keywords(pred) != keywords(label)) return false;
  if (!label.from.empty() && !same_multiset(pred.from, label.from)) return false;
  return true;
}

Sql rebuild(const Sql& sql, const SpiderSchema& schema, const std::map<std::string, std::string>& fk_map) {
  const std::set<std::string> valid = valid_columns(sql, schema);
  const ColumnRebuild columns{valid, fk_map};
  return columns.sql(drop_values(sql));
}

}  // namespace

bool spider_exact_match(const spider::Sql& prediction, const spider::Sql& gold, const SpiderSchema& schema) {
  const auto fk_map = foreign_key_map(schema);
  return exact_match_rebuilt(rebuild(prediction, schema, fk_map), rebuild(gold, schema, fk_map));
}

SpiderMatch spider_exact_match(std::string_view prediction, std::string_view gold, const SpiderSchema& schema) {
  SpiderMatch result;
  Sql gold_sql;
  try {
    gold_sql = spider::parse_sql(gold, schema);
  } catch (const spider::SqlParseError& e) {
    result.gold_parsed = false;
    result.error = std::string("gold: ") + e.what();
    return result;
  }
  Sql pred_sql;  // the official evaluation scores an unparsable prediction as the empty query
  try {
    pred_sql = spider::parse_sql(prediction, schema);
  } catch (const spider::SqlParseError& e) {
    result.prediction_parsed = false;
    result.error = e.what();
  }
  result.exact = spider_exact_match(pred_sql, gold_sql, schema);
  return result;
}

SpiderCorpusMatch spider_corpus_exact_match(const std::vector<std::string>& predictions,
                                            const std::vector<std::string>& golds,
                                            const std::vector<std::string>& db_ids, const SpiderSchemaSet& schemas) {
  if (predictions.size() != golds.size() || golds.size() != db_ids.size()) {
    throw std::invalid_argument("spider_corpus_exact_match: " + std::to_string(predictions.size()) +
                                " predictions, " + std::to_string(golds.size()) + " gold queries and " +
                                std::to_string(db_ids.size()) + " db_ids; pass one of each per example");
  }
  if (predictions.empty()) throw std::invalid_argument("spider_corpus_exact_match: no examples to score");
  SpiderCorpusMatch out;
  out.examples = predictions.size();
  size_t matched = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    const SpiderMatch m = spider_exact_match(predictions[i], golds[i], schemas.at(db_ids[i]));
    matched += m.exact;
    out.prediction_parse_failures += !m.prediction_parsed;
    out.gold_parse_failures += !m.gold_parsed;
  }
  out.exact_match = static_cast<double>(matched) / static_cast<double>(predictions.size());
  return out;
}

}  // namespace statetune::tasks
