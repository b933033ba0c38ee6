// otlpconc/topology.hpp: the machine's NUMA layout through hwloc, and memory bound to a node.
//
// What: otlpconc::topology, a small RAII wrapper over an hwloc 2.x topology: the NUMA nodes, cores
//   and processing units (PUs), which node a CPU belongs to, the node of the calling thread's
//   current CPU, pinning the calling thread to a core or a node, memory allocated on a node, and
//   where a memory range actually lives and how it is bound. topology::system() is this machine's, loaded once on first
//   use and shared; topology::synthetic("pack:2 numa:1 core:2 pu:1") builds an imaginary machine
//   for tests and for planning placement without the hardware.
// When to use: to place threads and memory on NUMA machines (object_pool uses it for its slabs).
// When not to: for a single allocation whose placement does not matter; for general-purpose
//   binding policies (use hwloc or libnuma directly: this is the subset the library needs).
// Numbering: nodes and cores are numbered by hwloc's logical index, 0 .. numa_nodes() - 1 and
//   0 .. cores() - 1, in topology order; CPUs (PUs) by the operating system's number, the one
//   sched_getcpu() returns. A PU in the cpuset of several nodes (memory-side caches, HBM next to
//   DRAM) belongs to the first of them.
// Without hwloc (CMake option OTLPCONC_WITH_HWLOC=OFF, or hwloc not found with AUTO, or a build
//   without the OTLPCONC_HAVE_HWLOC=1 definition): the same API describes one node holding every
//   CPU (cores() == pus() == std::thread::hardware_concurrency()), allocate_on_node(…, 0) returns
//   ordinary page-aligned memory, nodes_of reports node 0, pinning uses sched_setaffinity on Linux,
//   and synthetic() throws topology_error (ENOSYS).
// Errors are explicit, never silent:
//   - an index that does not exist (node, core, CPU) throws std::out_of_range;
//   - binding the OS refuses throws topology_error carrying the errno (ENOSYS: not supported,
//     EXDEV: cannot be enforced, EINVAL: rejected), with a message naming the call;
//   - allocate_on_node always binds strictly (HWLOC_MEMBIND_STRICT): the memory is on the node asked
//     for, or the call throws. It never hands back memory placed elsewhere;
//   - a topology that is not this machine's (synthetic) cannot bind threads or memory: those calls
//     throw topology_error (ENOSYS) instead of hwloc's silent no-op. allocate(), which promises no
//     placement, works on any topology.
// Thread safety: every const member may be called concurrently (hwloc topologies are read-only once
//   loaded). topology::system() is initialized once, thread-safely.
// Cost: node_of_cpu and current_node are an array lookup (current_node adds sched_getcpu(), a vDSO
//   call on Linux). Bitmaps are converted to std::vector<unsigned> on the calls that return them.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#ifndef OTLPCONC_HAVE_HWLOC
#define OTLPCONC_HAVE_HWLOC 0
#endif

#if OTLPCONC_HAVE_HWLOC
#include <hwloc.h>
#if HWLOC_API_VERSION < 0x00020000
#error "otlpconc/topology.hpp needs hwloc 2.x (Debian: libhwloc-dev); build with OTLPCONC_WITH_HWLOC=OFF to do without"
#endif
#endif

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#endif

namespace otlpconc {

// Binding refused by the operating system (or impossible on this topology); code() holds the errno.
class topology_error : public std::system_error {
 public:
  topology_error(int err, const std::string& what) : std::system_error(err, std::generic_category(), what) {}
};

class topology {
 public:
  // True when this build uses hwloc (OTLPCONC_HAVE_HWLOC=1).
  static constexpr bool hwloc_enabled = OTLPCONC_HAVE_HWLOC != 0;

  // This machine, loaded on first use (thread-safe) and shared for the life of the process (leaked
  // on purpose: pools and threads that outlive static destruction, such as a batch span
  // processor's detached export thread, still find it). Throws topology_error if hwloc cannot load
  // it (then every later call throws again).
  static const topology& system() {
    static const topology* instance = new topology(load_system());
    return *instance;
  }

  // An imaginary machine in hwloc's synthetic syntax, e.g. "pack:2 numa:1 core:2 pu:1" (two
  // packages, each one NUMA node with two cores of one PU). Throws std::invalid_argument for a
  // description hwloc rejects, topology_error (ENOSYS) without hwloc.
  static topology synthetic(const std::string& description) {
#if OTLPCONC_HAVE_HWLOC
    topology t;
    if (::hwloc_topology_init(&t.topo_) != 0)
      throw topology_error(errno, "otlpconc::topology: hwloc_topology_init failed");
    if (::hwloc_topology_set_synthetic(t.topo_, description.c_str()) != 0)
      throw std::invalid_argument("otlpconc::topology::synthetic: hwloc rejects the description \"" + description +
                                  "\" (example of a valid one: \"pack:2 numa:1 core:2 pu:1\")");
    t.finish_load("hwloc_topology_load (synthetic)");
    return t;
#else
    (void)description;
    throw topology_error(ENOSYS, "otlpconc::topology::synthetic: this build has no hwloc (OTLPCONC_WITH_HWLOC)");
#endif
  }

  topology(topology&& other) noexcept {
    swap(other);
  }
  topology& operator=(topology&& other) noexcept {
    topology tmp(std::move(other));
    swap(tmp);
    return *this;
  }
  topology(const topology&) = delete;
  topology& operator=(const topology&) = delete;
  ~topology() {
#if OTLPCONC_HAVE_HWLOC
    if (topo_ != nullptr)
      ::hwloc_topology_destroy(topo_);
#endif
  }

  // Whether this topology describes the machine the process runs on (false for synthetic ones).
  bool is_this_system() const noexcept {
    return this_system_;
  }
  unsigned numa_nodes() const noexcept {
    return static_cast<unsigned>(node_cpus_.size());
  }
  unsigned cores() const noexcept {
    return static_cast<unsigned>(core_cpus_.size());
  }
  unsigned pus() const noexcept {
    return pu_count_;
  }

  // The OS numbers of the CPUs (PUs) of a node / a core, ascending.
  const std::vector<unsigned>& cpus_of_node(unsigned node) const {
    check_index(node, numa_nodes(), "node");
    return node_cpus_[node];
  }
  const std::vector<unsigned>& cpus_of_core(unsigned core) const {
    check_index(core, cores(), "core");
    return core_cpus_[core];
  }

  // The node CPU `os_cpu` belongs to. std::out_of_range for a CPU this topology does not have.
  unsigned node_of_cpu(unsigned os_cpu) const {
    if (os_cpu >= cpu_node_.size() || cpu_node_[os_cpu] == no_node)
      throw std::out_of_range("otlpconc::topology: CPU " + std::to_string(os_cpu) + " is not in this topology");
    return cpu_node_[os_cpu];
  }

  // The CPU the calling thread runs on now (it may move right after, unless pinned).
  static unsigned current_cpu() {
#if defined(__linux__)
    int cpu = ::sched_getcpu();
    if (cpu < 0)
      throw topology_error(errno, "otlpconc::topology::current_cpu: sched_getcpu failed");
    return static_cast<unsigned>(cpu);
#else
    return 0;
#endif
  }
  // The node of the calling thread's current CPU. topology_error (ENOSYS) on a topology that is
  // not this machine's: its CPUs are not the ones threads run on.
  unsigned current_node() const {
    require_this_system("current_node");
    unsigned cpu = current_cpu();
    // A CPU hot-plugged after loading is not in the map: count it on node 0 rather than fail.
    return cpu < cpu_node_.size() && cpu_node_[cpu] != no_node ? cpu_node_[cpu] : 0;
  }

  // Pin the calling thread to the CPUs of one core / one node, or let it run anywhere again.
  void pin_thread_to_core(unsigned core) const {
    check_index(core, cores(), "core");
    bind_thread(core_cpus_[core], "pin_thread_to_core");
  }
  void pin_thread_to_node(unsigned node) const {
    check_index(node, numa_nodes(), "node");
    bind_thread(node_cpus_[node], "pin_thread_to_node");
  }
  void unpin_thread() const {
    bind_thread(all_cpus_, "unpin_thread");
  }

  // `bytes` of page-aligned memory on `node`, bound strictly (HWLOC_MEMBIND_BIND | BYNODESET |
  // STRICT): every page that gets touched lives on that node. Throws std::out_of_range for a node
  // that does not exist, topology_error when the OS cannot bind (never unbound memory instead), and
  // std::bad_alloc when memory is exhausted. Release with deallocate(p, bytes) on this topology.
  void* allocate_on_node(std::size_t bytes, unsigned node) const {
    check_index(node, numa_nodes(), "node");
    require_this_system("allocate_on_node");
    if (bytes == 0)
      bytes = 1;
#if OTLPCONC_HAVE_HWLOC
    errno = 0;
    void* p = ::hwloc_alloc_membind(topo_, bytes, node_sets_[node], HWLOC_MEMBIND_BIND,
                                    HWLOC_MEMBIND_BYNODESET | HWLOC_MEMBIND_STRICT);
    if (p == nullptr) {
      int err = errno;
      if (err == ENOMEM || err == 0)
        throw std::bad_alloc();
      throw topology_error(err, "otlpconc::topology::allocate_on_node: hwloc_alloc_membind refused node " +
                                    std::to_string(node));
    }
    return p;
#else
    return allocate(bytes); // one node holds all memory
#endif
  }
  // `bytes` of page-aligned memory with no placement request (the OS's default policy: usually the
  // node of the thread that first touches each page). std::bad_alloc when exhausted.
  void* allocate(std::size_t bytes) const {
    if (bytes == 0)
      bytes = 1;
#if OTLPCONC_HAVE_HWLOC
    void* p = ::hwloc_alloc(topo_, bytes);
    if (p == nullptr)
      throw std::bad_alloc();
    return p;
#else
    return ::operator new (round_to_page(bytes), std::align_val_t{page_size()});
#endif
  }
  // Frees memory from allocate_on_node or allocate of this topology.
  void deallocate(void* p, std::size_t bytes) const noexcept {
    if (p == nullptr)
      return;
    if (bytes == 0)
      bytes = 1;
#if OTLPCONC_HAVE_HWLOC
    ::hwloc_free(topo_, p, bytes);
#else
    ::operator delete (p, round_to_page(bytes), std::align_val_t{page_size()});
#endif
  }

  // The nodes the pages of [p, p + bytes) live on now (hwloc_get_area_memlocation), ascending.
  // Pages never touched have no location yet and add nothing. topology_error when the OS cannot
  // tell (ENOSYS) or on a topology that is not this machine's.
  std::vector<unsigned> nodes_of(const void* p, std::size_t bytes) const {
    require_this_system("nodes_of");
#if OTLPCONC_HAVE_HWLOC
    bitmap set;
    if (::hwloc_get_area_memlocation(topo_, p, bytes, set.get(), HWLOC_MEMBIND_BYNODESET) != 0)
      throw topology_error(errno, "otlpconc::topology::nodes_of: hwloc_get_area_memlocation failed");
    std::vector<unsigned> nodes;
    for (unsigned n = 0; n < numa_nodes(); ++n)
      if (::hwloc_bitmap_intersects(set.get(), node_sets_[n]))
        nodes.push_back(n);
    return nodes;
#else
    (void)p;
    (void)bytes;
    return {0};
#endif
  }

  // How [p, p + bytes) is bound (hwloc_get_area_membind): `bound` when the policy is
  // HWLOC_MEMBIND_BIND, with the nodes of the binding's nodeset, ascending. Unlike nodes_of, this
  // tells bound memory from memory that merely happens to sit on a node (on a one-node machine,
  // everything does). topology_error when the OS cannot tell (ENOSYS; always without hwloc), when
  // parts of the range are bound differently (EXDEV), or on a topology that is not this machine's.
  struct memory_binding {
    bool bound = false;
    std::vector<unsigned> nodes;
  };
  memory_binding binding_of(const void* p, std::size_t bytes) const {
    require_this_system("binding_of");
#if OTLPCONC_HAVE_HWLOC
    bitmap set;
    hwloc_membind_policy_t policy{};
    if (::hwloc_get_area_membind(topo_, p, bytes, set.get(), &policy, HWLOC_MEMBIND_BYNODESET) != 0)
      throw topology_error(errno, "otlpconc::topology::binding_of: hwloc_get_area_membind failed");
    memory_binding b;
    b.bound = policy == HWLOC_MEMBIND_BIND;
    for (unsigned n = 0; n < numa_nodes(); ++n)
      if (::hwloc_bitmap_intersects(set.get(), node_sets_[n]))
        b.nodes.push_back(n);
    return b;
#else
    (void)p;
    (void)bytes;
    throw topology_error(ENOSYS, "otlpconc::topology::binding_of: built without hwloc");
#endif
  }

  static std::size_t page_size() noexcept {
#if defined(__linux__)
    static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return size;
#else
    return 4096;
#endif
  }

 private:
  static constexpr unsigned no_node = ~0u;

  topology() = default;

  void swap(topology& other) noexcept {
#if OTLPCONC_HAVE_HWLOC
    std::swap(topo_, other.topo_);
    std::swap(node_sets_, other.node_sets_);
#endif
    std::swap(this_system_, other.this_system_);
    std::swap(pu_count_, other.pu_count_);
    std::swap(node_cpus_, other.node_cpus_);
    std::swap(core_cpus_, other.core_cpus_);
    std::swap(all_cpus_, other.all_cpus_);
    std::swap(cpu_node_, other.cpu_node_);
  }

  static void check_index(unsigned i, unsigned count, const char* what) {
    if (i >= count)
      throw std::out_of_range(std::string("otlpconc::topology: ") + what + " " + std::to_string(i) +
                              " does not exist (this topology has " + std::to_string(count) + ")");
  }
  void require_this_system(const char* call) const {
    if (!this_system_)
      throw topology_error(ENOSYS, std::string("otlpconc::topology::") + call +
                                       ": this topology is not this machine's (synthetic), nothing can be bound");
  }

  static std::size_t round_to_page(std::size_t bytes) noexcept {
    return (bytes + page_size() - 1) / page_size() * page_size();
  }

  void bind_thread(const std::vector<unsigned>& cpus, const char* call) const {
    require_this_system(call);
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    for (unsigned c : cpus)
      if (c < CPU_SETSIZE)
        CPU_SET(c, &set);
    int err = ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
    if (err != 0)
      throw topology_error(err, std::string("otlpconc::topology::") + call + ": pthread_setaffinity_np refused");
#else
    (void)cpus;
    throw topology_error(ENOSYS, std::string("otlpconc::topology::") + call + ": thread binding is not supported here");
#endif
  }

  // Fills the tables for one node holding every CPU (used without hwloc).
  void describe_flat(unsigned cpus) {
    pu_count_ = cpus;
    node_cpus_.assign(1, {});
    for (unsigned c = 0; c < cpus; ++c) {
      node_cpus_[0].push_back(c);
      core_cpus_.push_back({c});
      cpu_node_.push_back(0);
    }
    all_cpus_ = node_cpus_[0];
  }

#if OTLPCONC_HAVE_HWLOC
  // Owns one hwloc bitmap.
  class bitmap {
   public:
    bitmap() : set_(::hwloc_bitmap_alloc()) {
      if (set_ == nullptr)
        throw std::bad_alloc();
    }
    ~bitmap() { ::hwloc_bitmap_free(set_); }
    bitmap(const bitmap&) = delete;
    bitmap& operator=(const bitmap&) = delete;
    hwloc_bitmap_t get() const noexcept { return set_; }

   private:
    hwloc_bitmap_t set_;
  };

  static std::vector<unsigned> to_vector(hwloc_const_bitmap_t set) {
    std::vector<unsigned> out;
    for (int i = ::hwloc_bitmap_first(set); i >= 0; i = ::hwloc_bitmap_next(set, i))
      out.push_back(static_cast<unsigned>(i));
    return out;
  }

  void finish_load(const char* call) {
    if (::hwloc_topology_load(topo_) != 0)
      throw topology_error(errno, std::string("otlpconc::topology: ") + call + " failed");
    this_system_ = ::hwloc_topology_is_thissystem(topo_) != 0;
    pu_count_ = static_cast<unsigned>(::hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_PU));
    all_cpus_ = to_vector(::hwloc_topology_get_complete_cpuset(topo_));
    unsigned max_cpu = 0;
    for (unsigned c : all_cpus_)
      max_cpu = c > max_cpu ? c : max_cpu;
    cpu_node_.assign(all_cpus_.empty() ? 0 : max_cpu + 1, no_node);
    int nodes = ::hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_NUMANODE);
    for (int n = 0; n < nodes; ++n) {
      hwloc_obj_t obj = ::hwloc_get_obj_by_type(topo_, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(n));
      node_cpus_.push_back(to_vector(obj->cpuset));
      node_sets_.push_back(obj->nodeset);
      for (unsigned c : node_cpus_.back())
        if (c < cpu_node_.size() && cpu_node_[c] == no_node)
          cpu_node_[c] = static_cast<unsigned>(n);
    }
    int cores = ::hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_CORE);
    for (int c = 0; c < cores; ++c)
      core_cpus_.push_back(to_vector(::hwloc_get_obj_by_type(topo_, HWLOC_OBJ_CORE, static_cast<unsigned>(c))->cpuset));
    if (core_cpus_.empty()) // hwloc reports no cores on some virtual machines: a PU is a core then
      for (unsigned c : all_cpus_)
        core_cpus_.push_back({c});
    if (node_cpus_.empty())
      throw topology_error(ENODEV, "otlpconc::topology: hwloc found no NUMA node");
  }
#endif

  static topology load_system() {
    topology t;
#if OTLPCONC_HAVE_HWLOC
    if (::hwloc_topology_init(&t.topo_) != 0)
      throw topology_error(errno, "otlpconc::topology: hwloc_topology_init failed");
    t.finish_load("hwloc_topology_load");
#else
    unsigned n = std::thread::hardware_concurrency();
    t.describe_flat(n == 0 ? 1 : n);
    t.this_system_ = true;
#endif
    return t;
  }

#if OTLPCONC_HAVE_HWLOC
  hwloc_topology_t topo_ = nullptr;
  std::vector<hwloc_const_nodeset_t> node_sets_; // owned by topo_
#endif
  bool this_system_ = false;
  unsigned pu_count_ = 0;
  std::vector<std::vector<unsigned>> node_cpus_;
  std::vector<std::vector<unsigned>> core_cpus_;
  std::vector<unsigned> all_cpus_;
  std::vector<unsigned> cpu_node_; // OS CPU number -> node, no_node for gaps
};

} // namespace otlpconc
