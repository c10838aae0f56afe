// The SQL of Spider parsed into the structured form of the official evaluation (process_sql.py):
// select / from / where / groupBy / having / orderBy / limit / intersect / union / except, with tables and
// columns resolved against the database schema. It follows the official parser rule for rule, including
// what it rejects (comma joins, column aliases, IS NOT NULL), so exact-set match agrees with the
// published numbers.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/engine/tasks/spider_schema.h"

namespace statetune::tasks::spider {

// Index orders as in process_sql.py (the integers in dev.json's "sql").
enum AggOp : int { kAggNone = 0, kMax, kMin, kCount, kSum, kAvg };
enum UnitOp : int { kUnitNone = 0, kMinus, kPlus, kTimes, kDivide };
enum WhereOp : int { kNot = 0, kBetween, kEq, kGt, kLt, kGe, kLe, kNe, kIn, kLike, kIs, kExists };

struct Sql;
using SqlPtr = std::shared_ptr<const Sql>;

// (agg_id, col_id, isDistinct); column is "__table.col__" or "__all__".
struct ColUnit {
  int agg = kAggNone;
  std::string column;
  bool distinct = false;
};

// (unit_op, col_unit1, col_unit2)
struct ValUnit {
  int unit_op = kUnitNone;
  ColUnit col1;
  std::optional<ColUnit> col2;
};

// A condition's right-hand side: None, a number, a quoted string, a column or a sub-query.
struct Value {
  enum class Kind { kNone, kNumber, kString, kColumn, kSql };
  Kind kind = Kind::kNone;
  double number = 0;
  std::string text;  // kString: the literal with its double quotes
  ColUnit column;
  SqlPtr sql;
};

// (not_op, op_id, val_unit, val1, val2)
struct CondUnit {
  bool negated = false;
  int op = kEq;
  ValUnit val_unit;
  Value val1, val2;
};

// [cond_unit1, 'and'/'or', cond_unit2, ...] kept as units plus the conjunctions between them.
struct Condition {
  std::vector<CondUnit> units;
  std::vector<std::string> conjunctions;
  bool empty() const { return units.empty(); }
};

// ('table_unit', "__table__") or ('sql', sub-query).
struct TableUnit {
  std::string table;
  SqlPtr sql;
};

struct Sql {
  bool select_distinct = false;
  std::vector<std::pair<int, ValUnit>> select;  // (agg_id, val_unit)
  std::vector<TableUnit> from;
  Condition from_conds;
  Condition where;
  std::vector<ColUnit> group_by;
  Condition having;
  bool has_order_by = false;
  std::string order_direction;  // "asc" / "desc"
  std::vector<ValUnit> order_by;
  std::optional<int64_t> limit;
  SqlPtr intersect, union_, except_;
};

bool operator==(const ColUnit& a, const ColUnit& b);
bool operator==(const ValUnit& a, const ValUnit& b);
bool operator==(const Value& a, const Value& b);
bool operator==(const CondUnit& a, const CondUnit& b);
bool operator==(const Condition& a, const Condition& b);
bool operator==(const TableUnit& a, const TableUnit& b);
bool operator==(const Sql& a, const Sql& b);
inline bool operator!=(const ColUnit& a, const ColUnit& b) { return !(a == b); }
inline bool operator!=(const ValUnit& a, const ValUnit& b) { return !(a == b); }
inline bool operator!=(const Sql& a, const Sql& b) { return !(a == b); }

// Thrown for SQL the official parser cannot read; what() says where.
class SqlParseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// process_sql.tokenize: single quotes become double quotes, quoted literals stay whole tokens (case
// kept), everything else is lowercased and split as NLTK's word tokenizer does; "! =", "> =", "< ="
// are joined. Throws SqlParseError on an odd number of quotes.
std::vector<std::string> tokenize_sql(std::string_view query);

// process_sql.get_sql. Throws SqlParseError.
Sql parse_sql(std::string_view query, const SpiderSchema& schema);

// The structure in dev.json's "sql" format: column and table ids as indices into tables.json.
nlohmann::json to_spider_json(const Sql& sql, const SpiderSchema& schema);

}  // namespace statetune::tasks::spider
