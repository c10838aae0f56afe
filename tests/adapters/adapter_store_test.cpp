#include "server/engine/adapters/adapter_store.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <thread>

#include "server/engine/util/durable_file.h"
#include "tests/adapters/test_fixtures.h"

namespace statetune::engine {
namespace {

namespace fs = std::filesystem;
using testing::constant_adapter;
using testing::fresh_dir;
using testing::RawFile;
using testing::tiny_config;
using testing::tiny_fingerprint;

// The bytes of a valid adapter file, as a client would upload them.
std::string file_bytes(const Adapter& a, const fs::path& scratch) {
  const fs::path p = scratch / "upload-src.safetensors";
  save_adapter(a, p);
  std::string bytes = read_file(p);
  fs::remove(p);
  return bytes;
}

std::set<std::string> files_in(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

float first_value(const Adapter& a) { return a.state_offset.flatten()[0].item<float>(); }

// 100,000 levels: enough to overflow the stack of anything that recurses per level.
std::string deeply_nested_json() { return std::string(100000, '[') + std::string(100000, ']'); }

// A valid adapter file whose metadata `extra` is replaced by `extra`.
std::string with_extra(const std::string& file, const std::string& extra) {
  RawFile r = RawFile::parse(file);
  r.metadata["extra"] = extra;
  return r.serialize();
}

// A small tmpfs mounted for one test: a real file system that really fills up, and can be made
// read-only. Mounting needs root (CI runs as root); elsewhere the tests that need it are skipped.
class SmallDisk {
 public:
  SmallDisk(fs::path dir, int64_t bytes) : dir_(std::move(dir)), options_("size=" + std::to_string(bytes)) {
    fs::create_directories(dir_);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, options_.c_str()) == 0) {
      mounted_ = true;
    } else {
      why_not_ = std::strerror(errno);
    }
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& why_not() const { return why_not_; }
  const fs::path& dir() const { return dir_; }
  static int64_t page() { return ::sysconf(_SC_PAGESIZE); }

  // Fills the file system with one-page files until a write fails, then deletes `free_pages` of them.
  void fill_leaving(int free_pages) {
    const std::string one_page(static_cast<size_t>(page()), 'f');
    for (;;) {
      const fs::path p = filler(fillers_);
      try {
        write_file_durably(p, one_page);
      } catch (const std::runtime_error&) {
        fs::remove(p);
        break;
      }
      ++fillers_;
    }
    for (int i = 0; i < free_pages && fillers_ > 0; ++i) fs::remove(filler(--fillers_));
  }
  void free_all() {
    while (fillers_ > 0) fs::remove(filler(--fillers_));
  }
  void set_read_only(bool read_only) {
    const unsigned long flags = MS_REMOUNT | (read_only ? MS_RDONLY : 0);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", flags, options_.c_str()) != 0) {
      throw std::runtime_error(std::string("remount: ") + std::strerror(errno));
    }
  }

 private:
  fs::path filler(int i) const { return dir_ / ("filler-" + std::to_string(i)); }

  fs::path dir_;
  std::string options_;
  bool mounted_ = false;
  std::string why_not_;
  int fillers_ = 0;
};

class AdapterStoreOnASmallDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    disk_ = std::make_unique<SmallDisk>(fresh_dir("store-small-disk") / "mnt", 64 * SmallDisk::page());
    if (!disk_->mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk_->why_not() << ")";
  }
  fs::path store_dir() const { return disk_->dir() / "store"; }
  // An adapter file of one page: output_offset only, 3 layers of 8 floats plus the header.
  static Adapter small_adapter(float value) { return constant_adapter(value, {kOutputOffset}); }

  std::unique_ptr<SmallDisk> disk_;
};

TEST(AdapterStore, VersionsAreMonotonicAndTheLatestIsCurrent) {
  const auto root = fresh_dir("store-versions");
  AdapterStore store(root / "store", tiny_fingerprint());
  EXPECT_EQ(store.put("acme", "sst2", constant_adapter(1)), "1");
  EXPECT_EQ(store.put("acme", "sst2", file_bytes(constant_adapter(2), root)), "2");

  const auto cur = store.get("acme", "sst2");
  ASSERT_TRUE(cur.has_value());
  EXPECT_EQ(cur->version, "2");
  EXPECT_TRUE(cur->current);
  EXPECT_EQ(cur->methods, (std::vector<std::string>{kStateOffset, kOutputOffset, kInitialState}));
  EXPECT_GT(cur->size_bytes, 3 * 8 * 4 * 4);
  const auto v1 = store.get("acme", "sst2", std::string("1"));
  ASSERT_TRUE(v1.has_value());
  EXPECT_FALSE(v1->current);
  EXPECT_FALSE(store.get("acme", "sst2", std::string("3")).has_value());
  EXPECT_THROW(store.get("acme", "sst2", std::string("01")), std::invalid_argument);

  const Adapter loaded = store.load("acme", "sst2", "1");
  EXPECT_EQ(first_value(loaded), 1.0f);
  EXPECT_EQ(loaded.name, "sst2");
  EXPECT_EQ(loaded.version, "1");
  EXPECT_EQ(first_value(store.load("acme", "sst2", "2")), 2.0f);
  EXPECT_THROW(store.load("acme", "sst2", "9"), AdapterNotFound);

  ASSERT_EQ(store.versions("acme", "sst2").size(), 2u);
  EXPECT_EQ((AdapterId{"acme", "sst2", "2"}.key()), "acme/sst2@2");
}

TEST(AdapterStore, WritesLeaveOnlyVersionFilesAndAnIndex) {
  const auto root = fresh_dir("store-files");
  AdapterStore store(root, tiny_fingerprint());
  store.put("acme", "a", constant_adapter(1));
  store.put("acme", "a", constant_adapter(2), at::kBFloat16);
  const fs::path dir = root / "acme" / "a";
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"1.safetensors", "2.safetensors", "index.json"}));
  const auto index = nlohmann::json::parse(read_file(dir / "index.json"));
  EXPECT_EQ(index.at("current"), "2");
  EXPECT_EQ(index.at("next_version"), 3);
  EXPECT_EQ(first_value(store.load("acme", "a", "2")), 2.0f);  // 2 is exact in bf16
}

TEST(AdapterStore, RejectedUploadKeepsThePreviousVersionCurrent) {
  const auto root = fresh_dir("store-bad-upload");
  AdapterStore store(root, tiny_fingerprint());
  store.put("acme", "a", constant_adapter(1));

  std::string good = file_bytes(constant_adapter(5), root);
  EXPECT_THROW(store.put("acme", "a", good.substr(0, good.size() / 2)), std::invalid_argument);
  EXPECT_THROW(store.put("acme", "a", std::string("not a safetensors file")), std::invalid_argument);
  Adapter other_base = constant_adapter(3);
  other_base.base.weights_sha256 = std::string(64, 'f');
  try {
    store.put("acme", "a", file_bytes(other_base, root));
    FAIL() << "an adapter for another base was accepted";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("different base model"), std::string::npos) << msg;
    EXPECT_NE(msg.find("version 1 stays current"), std::string::npos) << msg;
  }
  try {
    store.put("acme", "a", std::string((size_t{17} << 20), 'x'));
    FAIL() << "an oversized upload was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("larger than any adapter"), std::string::npos) << e.what();
  }
  EXPECT_EQ(store.get("acme", "a")->version, "1");
  EXPECT_EQ(files_in(root / "acme" / "a"), (std::set<std::string>{"1.safetensors", "index.json"}));
  // Reserved numbers are not reused, so a cache key never names two contents.
  const std::string next = store.put("acme", "a", good);
  EXPECT_GT(std::stoi(next), 1);
  EXPECT_EQ(store.get("acme", "a")->version, next);
}

TEST(AdapterStore, DeeplyNestedMetadataIsRefusedAndNothingIsStored) {
  const auto root = fresh_dir("store-deep");
  AdapterStore store(root, tiny_fingerprint());
  store.put("acme", "a", constant_adapter(1));
  const std::string hostile = with_extra(file_bytes(constant_adapter(2), root), deeply_nested_json());
  for (const std::string name : {"a", "fresh"}) {
    try {
      store.put("acme", name, hostile);
      FAIL() << "an upload whose metadata nests 100,000 deep was accepted";
    } catch (const std::invalid_argument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("'extra' nests deeper than"), std::string::npos) << msg;
      EXPECT_LT(msg.size(), 1000u) << "the error echoes the input";
    }
  }
  EXPECT_EQ(store.get("acme", "a")->version, "1");
  EXPECT_EQ(files_in(root / "acme"), (std::set<std::string>{"a"}));
  EXPECT_EQ(files_in(root / "acme" / "a"), (std::set<std::string>{"1.safetensors", "index.json"}));
  AdapterStore reopened(root, tiny_fingerprint());
  EXPECT_TRUE(reopened.problems().empty());
  EXPECT_EQ(reopened.get("acme", "a")->version, "1");
}

TEST(AdapterStore, BadStoredFilesAreQuarantinedAtStartUpAndTheRestLoads) {
  const auto root = fresh_dir("store-quarantine");
  std::string good;
  {
    AdapterStore store(root, tiny_fingerprint());
    store.put("acme", "a", constant_adapter(1));
    store.put("acme", "a", constant_adapter(2));
    store.put("acme", "b", constant_adapter(3));
    good = read_file(root / "acme" / "a" / "1.safetensors");
  }
  // Files the store did not validate (an older build wrote them, or someone edited the folder): a
  // version whose metadata nests 100,000 deep, a torn version, and an index nested 100,000 deep.
  write_file_durably(root / "acme" / "a" / "3.safetensors", with_extra(good, deeply_nested_json()));
  write_file_durably(root / "acme" / "b" / "2.safetensors", good.substr(0, good.size() / 2));
  write_file_durably(root / "acme" / "b" / "index.json", deeply_nested_json());

  AdapterStore store(root, tiny_fingerprint());
  EXPECT_EQ(store.problems().size(), 3u);
  EXPECT_EQ(store.get("acme", "a")->version, "2");  // as the index says
  EXPECT_EQ(store.versions("acme", "a").size(), 2u);
  EXPECT_EQ(store.get("acme", "b")->version, "1");  // the index is gone: the newest valid version
  EXPECT_EQ(first_value(store.load("acme", "b", "1")), 3.0f);
  EXPECT_EQ(files_in(root), (std::set<std::string>{".quarantine", "acme"}));
  EXPECT_EQ(files_in(root / "acme" / "a"), (std::set<std::string>{"1.safetensors", "2.safetensors", "index.json"}));
  EXPECT_EQ(files_in(root / "acme" / "b"), (std::set<std::string>{"1.safetensors", "index.json"}));
  EXPECT_EQ(files_in(root / ".quarantine" / "acme" / "a"), (std::set<std::string>{"3.safetensors"}));
  EXPECT_EQ(files_in(root / ".quarantine" / "acme" / "b"), (std::set<std::string>{"2.safetensors", "index.json"}));

  // Out of the way: the next start is clean, and the quarantined version numbers are not reused.
  AdapterStore again(root, tiny_fingerprint());
  EXPECT_TRUE(again.problems().empty());
  EXPECT_EQ(again.get("acme", "b")->version, "1");
  EXPECT_EQ(again.put("acme", "a", constant_adapter(4)), "4");
  EXPECT_EQ(again.put("acme", "b", constant_adapter(5)), "3");
}

TEST(AdapterStore, StartUpRemovesLeftoversOfInterruptedWrites) {
  const auto root = fresh_dir("store-leftovers");
  {
    AdapterStore store(root, tiny_fingerprint());
    store.put("acme", "a", constant_adapter(1));
    store.put("acme", "gone", constant_adapter(2));
    store.remove("acme", "gone");  // its index stays: it remembers the next version number
  }
  write_file_durably(root / "acme" / "a" / "2.safetensors.upload", "partial");
  write_file_durably(root / "acme" / "a" / "3.safetensors.tmp", "partial");
  write_file_durably(root / "acme" / "a" / "index.json.tmp", "{");
  fs::create_directories(root / "acme" / "never-stored");
  fs::create_directories(root / "newco" / "never-stored");
  fs::create_directories(root / "ghost");

  AdapterStore store(root, tiny_fingerprint());
  EXPECT_TRUE(store.problems().empty());
  EXPECT_EQ(files_in(root), (std::set<std::string>{"acme"}));
  EXPECT_EQ(files_in(root / "acme"), (std::set<std::string>{"a", "gone"}));
  EXPECT_EQ(files_in(root / "acme" / "a"), (std::set<std::string>{"1.safetensors", "index.json"}));
  EXPECT_EQ(store.tenants(), std::vector<std::string>{"acme"});
  EXPECT_EQ(store.put("acme", "gone", constant_adapter(3)), "2");
}

TEST(AdapterStore, ReloadsEverythingOnRestart) {
  const auto root = fresh_dir("store-restart");
  {
    AdapterStore store(root, tiny_fingerprint());
    store.put("acme", "a", constant_adapter(1));
    store.put("acme", "a", constant_adapter(2));
    store.put("acme", "b", constant_adapter(3, {kOutputOffset}));
    store.put("globex", "a", constant_adapter(4));
    store.remove("globex", "a");
  }
  AdapterStore store(root, tiny_fingerprint());
  EXPECT_TRUE(store.problems().empty());
  const auto listed = store.list("acme");
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].name, "a");
  EXPECT_EQ(listed[0].version, "2");
  EXPECT_EQ(listed[1].name, "b");
  EXPECT_EQ(listed[1].methods, std::vector<std::string>{kOutputOffset});
  EXPECT_EQ(first_value(store.load("acme", "a", "2")), 2.0f);
  EXPECT_TRUE(store.list("globex").empty());
  EXPECT_EQ(store.put("acme", "a", constant_adapter(5)), "3");
  EXPECT_EQ(store.put("globex", "a", constant_adapter(6)), "2");  // continues after the removed 1
}

TEST(AdapterStore, CorruptFilesOnDiskAreReportedNotFatal) {
  const auto root = fresh_dir("store-corrupt");
  {
    AdapterStore store(root, tiny_fingerprint());
    store.put("acme", "a", constant_adapter(1));
    store.put("acme", "a", constant_adapter(2));
    store.put("acme", "b", constant_adapter(3));
    store.put("acme", "c", constant_adapter(4));
  }
  // a: an old version corrupt -> a still works. b: the current version corrupt -> b has none.
  // c: unreadable index -> falls back to the newest valid version.
  write_file_durably(root / "acme" / "a" / "1.safetensors", "garbage");
  const std::string b2 = read_file(root / "acme" / "b" / "1.safetensors");
  write_file_durably(root / "acme" / "b" / "1.safetensors", b2.substr(0, b2.size() - 10));
  write_file_durably(root / "acme" / "c" / "index.json", "{ not json");
  write_file_durably(root / "acme" / "c" / "7.safetensors.upload", "interrupted upload");

  AdapterStore store(root, tiny_fingerprint());
  EXPECT_EQ(store.problems().size(), 4u);
  ASSERT_TRUE(store.get("acme", "a").has_value());
  EXPECT_EQ(store.get("acme", "a")->version, "2");
  EXPECT_FALSE(store.get("acme", "a", std::string("1")).has_value());
  EXPECT_FALSE(store.get("acme", "b").has_value());
  ASSERT_TRUE(store.get("acme", "c").has_value());
  EXPECT_EQ(store.get("acme", "c")->version, "1");
  EXPECT_FALSE(fs::exists(root / "acme" / "c" / "7.safetensors.upload"));
  // A corrupt version number is still never reused.
  EXPECT_EQ(store.put("acme", "b", constant_adapter(5)), "2");
}

TEST(AdapterStore, RestartWithAnotherBaseSkipsIncompatibleAdapters) {
  const auto root = fresh_dir("store-other-base");
  {
    AdapterStore store(root, tiny_fingerprint());
    store.put("acme", "a", constant_adapter(1));
  }
  AdapterStore store(root, tiny_fingerprint(std::string(64, 'c')));
  EXPECT_FALSE(store.get("acme", "a").has_value());
  ASSERT_EQ(store.problems().size(), 2u);  // the version file, then "current version is invalid"
  EXPECT_NE(store.problems()[0].message.find("different base model"), std::string::npos)
      << store.problems()[0].message;
  // Valid files for another model are left where they are (not quarantined): the right model finds them.
  EXPECT_FALSE(fs::exists(root / ".quarantine"));
  AdapterStore right_model(root, tiny_fingerprint());
  EXPECT_TRUE(right_model.problems().empty());
  EXPECT_EQ(right_model.get("acme", "a")->version, "1");
}

TEST(AdapterStore, NamesAreValidatedAgainstPathTraversal) {
  const auto root = fresh_dir("store-names");
  AdapterStore store(root / "store", tiny_fingerprint());
  const Adapter a = constant_adapter(1);
  const std::vector<std::string> bad_names = {"",       ".",           "..",    "../x",
                                             "a/b",    "a\\b",        ".hidden", "sp ace",
                                             "\xc3\xa9", std::string(65, 'x'), std::string("nul\0byte", 8)};
  for (const std::string& bad : bad_names) {
    EXPECT_THROW(store.put(bad, "ok", a), std::invalid_argument) << bad;
    EXPECT_THROW(store.put("ok", bad, a), std::invalid_argument) << bad;
    EXPECT_THROW(store.get("ok", bad), std::invalid_argument) << bad;
    EXPECT_THROW(store.list(bad), std::invalid_argument) << bad;
    EXPECT_THROW(store.remove(bad, "ok"), std::invalid_argument) << bad;
  }
  EXPECT_FALSE(fs::exists(root / "x"));
  EXPECT_TRUE(store.tenants().empty());
  EXPECT_EQ(store.put("Tenant-1", std::string("v1.2_final-") + std::string(53, 'z'), a), "1");
}

TEST(AdapterStore, TenantsAreIsolated) {
  const auto root = fresh_dir("store-tenants");
  AdapterStore store(root, tiny_fingerprint());
  store.put("acme", "shared-name", constant_adapter(1));
  store.put("globex", "shared-name", constant_adapter(2));
  store.put("globex", "only-globex", constant_adapter(3, {kOutputOffset}));

  EXPECT_EQ(store.list("acme").size(), 1u);
  EXPECT_EQ(store.list("globex").size(), 2u);
  EXPECT_EQ(first_value(store.load("acme", "shared-name", "1")), 1.0f);
  EXPECT_EQ(first_value(store.load("globex", "shared-name", "1")), 2.0f);
  EXPECT_THROW(store.load("acme", "only-globex", "1"), AdapterNotFound);
  EXPECT_FALSE(store.get("acme", "only-globex").has_value());

  const int64_t acme = store.tenant_bytes("acme");
  const int64_t globex = store.tenant_bytes("globex");
  EXPECT_EQ(acme, static_cast<int64_t>(fs::file_size(root / "acme" / "shared-name" / "1.safetensors")));
  EXPECT_GT(globex, acme);
  EXPECT_EQ(store.tenant_bytes("nobody"), 0);

  EXPECT_TRUE(store.remove("globex", "shared-name"));
  EXPECT_FALSE(store.remove("globex", "shared-name"));
  EXPECT_TRUE(store.get("acme", "shared-name").has_value());
  EXPECT_LT(store.tenant_bytes("globex"), globex);
}

TEST(AdapterStore, ConcurrentPutsGetDistinctVersions) {
  const auto root = fresh_dir("store-concurrent");
  AdapterStore store(root, tiny_fingerprint());
  std::vector<std::thread> threads;
  std::mutex mu;
  std::set<std::string> versions;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) {
        const std::string v = store.put("acme", "a", constant_adapter(static_cast<float>(t)));
        std::lock_guard<std::mutex> lock(mu);
        versions.insert(v);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(versions.size(), 12u);
  EXPECT_EQ(store.get("acme", "a")->version, "12");
  AdapterStore reopened(root, tiny_fingerprint());
  EXPECT_EQ(reopened.versions("acme", "a").size(), 12u);
  EXPECT_EQ(reopened.get("acme", "a")->version, "12");
}

// The size of every file constant_adapter() makes (all three methods, fp32).
int64_t adapter_file_size(const fs::path& scratch) {
  return static_cast<int64_t>(file_bytes(constant_adapter(1), scratch).size());
}

std::string quota_error(AdapterStore& store, const std::string& tenant, const std::string& name) {
  try {
    store.put(tenant, name, constant_adapter(9));
  } catch (const AdapterQuotaExceeded& e) {
    return e.what();
  }
  return "";
}

TEST(AdapterStoreQuota, TenantBytesAreLimited) {
  const auto root = fresh_dir("quota-bytes");
  const int64_t size = adapter_file_size(root);
  AdapterQuota quota;
  quota.tenant_bytes = 2 * size + size / 2;
  AdapterStore store(root / "store", tiny_fingerprint(), quota);
  store.put("acme", "a", constant_adapter(1));
  store.put("acme", "b", constant_adapter(2));
  const std::string msg = quota_error(store, "acme", "c");
  EXPECT_NE(msg.find("quota is " + std::to_string(quota.tenant_bytes)), std::string::npos) << msg;
  EXPECT_NE(quota_error(store, "acme", "a"), "");  // a new version counts as much as a new adapter
  EXPECT_EQ(store.put("globex", "a", constant_adapter(3)), "1");  // the quota is per tenant
  EXPECT_EQ(files_in(root / "store" / "acme"), (std::set<std::string>{"a", "b"}));
  EXPECT_EQ(files_in(root / "store" / "acme" / "a"), (std::set<std::string>{"1.safetensors", "index.json"}));
  EXPECT_EQ(store.get("acme", "a")->version, "1");
  // Deleting makes room.
  EXPECT_TRUE(store.remove("acme", "b"));
  EXPECT_EQ(store.put("acme", "c", constant_adapter(4)), "1");
  EXPECT_EQ(store.tenant_bytes("acme"), 2 * size);
}

TEST(AdapterStoreQuota, AdapterCountIsLimitedAcrossRestarts) {
  const auto root = fresh_dir("quota-count");
  AdapterQuota quota;
  quota.tenant_adapters = 2;
  {
    AdapterStore store(root, tiny_fingerprint(), quota);
    store.put("acme", "a", constant_adapter(1));
    store.put("acme", "b", constant_adapter(2));
    const std::string msg = quota_error(store, "acme", "c");
    EXPECT_NE(msg.find("has 2 adapters"), std::string::npos) << msg;
    EXPECT_EQ(store.put("acme", "a", constant_adapter(3)), "2");  // new versions are not new adapters
    EXPECT_FALSE(fs::exists(root / "acme" / "c"));
  }
  AdapterStore store(root, tiny_fingerprint(), quota);
  EXPECT_NE(quota_error(store, "acme", "c"), "");
  EXPECT_TRUE(store.remove("acme", "b"));
  EXPECT_EQ(store.put("acme", "c", constant_adapter(4)), "1");
}

TEST(AdapterStoreQuota, VersionsPerAdapterAreLimitedOrTheOldestArePruned) {
  const auto root = fresh_dir("quota-versions");
  const int64_t size = adapter_file_size(root);
  AdapterQuota quota;
  quota.versions_per_adapter = 2;
  {
    AdapterStore store(root / "store", tiny_fingerprint(), quota);
    store.put("acme", "a", constant_adapter(1));
    store.put("acme", "a", constant_adapter(2));
    const std::string msg = quota_error(store, "acme", "a");
    EXPECT_NE(msg.find("keeps 2 versions"), std::string::npos) << msg;
    EXPECT_EQ(store.get("acme", "a")->version, "2");
  }
  // Pruning: the oldest non-current version goes, and its bytes count as freed (the tenant is at
  // its byte quota with two versions, yet a third fits).
  quota.prune_old_versions = true;
  quota.tenant_bytes = 2 * size;
  AdapterStore store(root / "store", tiny_fingerprint(), quota);
  EXPECT_EQ(store.put("acme", "a", constant_adapter(3)), "3");
  EXPECT_EQ(store.put("acme", "a", constant_adapter(4)), "4");
  EXPECT_EQ(files_in(root / "store" / "acme" / "a"),
            (std::set<std::string>{"3.safetensors", "4.safetensors", "index.json"}));
  EXPECT_EQ(store.versions("acme", "a").size(), 2u);
  EXPECT_EQ(first_value(store.load("acme", "a", "4")), 4.0f);
  EXPECT_NE(quota_error(store, "acme", "b"), "");  // pruning frees only the adapter's own versions
  AdapterStore reopened(root / "store", tiny_fingerprint(), quota);
  EXPECT_TRUE(reopened.problems().empty());
  EXPECT_EQ(reopened.get("acme", "a")->version, "4");
  EXPECT_EQ(reopened.versions("acme", "a").size(), 2u);
}

TEST(AdapterStoreQuota, ConcurrentPutsCannotOvershootTogether) {
  const auto root = fresh_dir("quota-concurrent");
  const int64_t size = adapter_file_size(root);
  AdapterQuota quota;
  quota.versions_per_adapter = 5;
  quota.tenant_bytes = 8 * size;
  AdapterStore store(root / "store", tiny_fingerprint(), quota);
  std::atomic<int> stored{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) {
        // Thread 0..3 each put 3 versions of "shared" and then 3 of their own adapter.
        for (const std::string& name : {std::string("shared"), "own-" + std::to_string(t)}) {
          try {
            store.put("acme", name, constant_adapter(static_cast<float>(t)));
            ++stored;
          } catch (const AdapterQuotaExceeded&) {
            ++refused;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(stored.load(), 8);
  EXPECT_EQ(refused.load(), 16);
  EXPECT_LE(store.versions("acme", "shared").size(), 5u);
  EXPECT_EQ(store.tenant_bytes("acme"), 8 * size);
  AdapterStore reopened(root / "store", tiny_fingerprint(), quota);
  EXPECT_EQ(reopened.tenant_bytes("acme"), 8 * size);
}

TEST_F(AdapterStoreOnASmallDisk, FailedUploadsLeaveNoLeftoversAndThePreviousVersionCurrent) {
  AdapterStore store(store_dir(), tiny_fingerprint());
  ASSERT_EQ(store.put("acme", "a", small_adapter(1)), "1");
  const fs::path dir = store_dir() / "acme" / "a";
  ASSERT_LE(static_cast<int64_t>(fs::file_size(dir / "1.safetensors")), SmallDisk::page());
  // No room at all: the version file cannot be written. One page: it can, but then its index cannot.
  for (const int free_pages : {0, 1}) {
    SCOPED_TRACE(std::to_string(free_pages) + " free pages");
    disk_->fill_leaving(free_pages);
    EXPECT_THROW(store.put("acme", "a", small_adapter(2)), std::runtime_error);
    EXPECT_THROW(store.put("acme", "fresh", small_adapter(3)), std::runtime_error);
    EXPECT_THROW(store.put("newco", "a", small_adapter(4)), std::runtime_error);
    EXPECT_EQ(store.get("acme", "a")->version, "1");
    EXPECT_EQ(store.versions("acme", "a").size(), 1u);
    EXPECT_FALSE(store.get("acme", "fresh").has_value());
    EXPECT_EQ(store.tenants(), std::vector<std::string>{"acme"});
    EXPECT_EQ(files_in(store_dir()), (std::set<std::string>{"acme"}));
    EXPECT_EQ(files_in(store_dir() / "acme"), (std::set<std::string>{"a"}));
    EXPECT_EQ(files_in(dir), (std::set<std::string>{"1.safetensors", "index.json"}));
    disk_->free_all();
  }
  // With room again uploads work (the failed attempts used up no version number), and a restart
  // sees exactly what memory saw.
  const std::string version = store.put("acme", "a", small_adapter(5));
  EXPECT_EQ(version, "2");
  AdapterStore reopened(store_dir(), tiny_fingerprint());
  EXPECT_TRUE(reopened.problems().empty());
  EXPECT_EQ(reopened.get("acme", "a")->version, version);
  EXPECT_EQ(reopened.versions("acme", "a").size(), 2u);
  EXPECT_EQ(reopened.tenants(), std::vector<std::string>{"acme"});
}

TEST_F(AdapterStoreOnASmallDisk, RemoveWorksOnAFullDiskAndFreesTheSpace) {
  AdapterStore store(store_dir(), tiny_fingerprint());
  store.put("acme", "a", small_adapter(1));
  store.put("acme", "a", small_adapter(2));
  store.put("acme", "b", small_adapter(3));
  disk_->fill_leaving(0);
  EXPECT_TRUE(store.remove("acme", "a"));
  EXPECT_FALSE(store.get("acme", "a").has_value());
  EXPECT_TRUE(store.versions("acme", "a").empty());
  EXPECT_EQ(files_in(store_dir() / "acme" / "a"), (std::set<std::string>{"index.json"}));
  // The tenant made room: the next upload fits.
  EXPECT_EQ(store.put("acme", "b", small_adapter(4)), "2");

  AdapterStore reopened(store_dir(), tiny_fingerprint());
  EXPECT_TRUE(reopened.problems().empty());
  EXPECT_FALSE(reopened.get("acme", "a").has_value());
  EXPECT_EQ(reopened.get("acme", "b")->version, "2");
  disk_->free_all();
  EXPECT_EQ(reopened.put("acme", "a", small_adapter(5)), "3");  // numbers are never reused
}

TEST_F(AdapterStoreOnASmallDisk, FailedRemoveLeavesMemoryAndDiskAsTheyWere) {
  AdapterStore store(store_dir(), tiny_fingerprint());
  store.put("acme", "a", small_adapter(1));
  store.put("acme", "a", small_adapter(2));
  disk_->set_read_only(true);
  EXPECT_THROW(store.remove("acme", "a"), std::runtime_error);
  EXPECT_EQ(store.get("acme", "a")->version, "2");
  EXPECT_EQ(store.versions("acme", "a").size(), 2u);
  disk_->set_read_only(false);
  EXPECT_EQ(files_in(store_dir() / "acme" / "a"),
            (std::set<std::string>{"1.safetensors", "2.safetensors", "index.json"}));
  {
    AdapterStore reopened(store_dir(), tiny_fingerprint());
    EXPECT_TRUE(reopened.problems().empty());
    EXPECT_EQ(reopened.get("acme", "a")->version, "2");
  }
  EXPECT_TRUE(store.remove("acme", "a"));
  EXPECT_FALSE(AdapterStore(store_dir(), tiny_fingerprint()).get("acme", "a").has_value());
}

}  // namespace
}  // namespace statetune::engine
