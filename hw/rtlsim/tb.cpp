// agq's Verilator testbench for a stitched FINN dataflow partition (top module agq_top).
//
// Streams the packed input words (one hex word per line, packed by finn.util.data_packing in Python)
// into in0_V, collects every out0_V word with the clock cycle it was accepted in, and can hold
// out0_V_TREADY low at random to exercise back-pressure. Nothing here knows the network: widths come
// from the Verilated model's port types, stream names from the generated agq_streams.h.
//
// stdout, one line per event (read by hw/rtlsim/run.py while the simulation runs):
//   O <cycle> <hex word>     an output word accepted at <cycle> (cycle 0 = first cycle after reset)
//   D <cycles>               all expected output words received
// On a stall (no AXI stream moved for --watchdog cycles) or after --max-cycles, one line
// "agq-tb: error: ..." on stderr naming the last stream that moved, and exit status 3.
//
// Usage: agq_sim --input FILE --outputs N [--stall-prob P] [--seed S] [--watchdog C] [--max-cycles C]

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "Vagq_top.h"
#include "agq_streams.h"
#include "verilated.h"

namespace {

constexpr int kResetCycles = 16;  // > 100 ns at 10 ns/cycle: mvu.sv's DSP start-up recovery

using Word = std::vector<uint32_t>;  // little-endian 32-bit limbs of one stream word

Word parse_hex(const std::string& hex) {
    Word word;
    for (size_t end = hex.size(); end > 0;) {
        const size_t begin = end >= 8 ? end - 8 : 0;
        word.push_back(static_cast<uint32_t>(std::stoul(hex.substr(begin, end - begin), nullptr, 16)));
        end = begin;
    }
    return word;
}

// Port access for every width Verilator may choose (CData/SData/IData/QData or VlWide).
template <typename T>
void set_port(T& port, const Word& w) {
    uint64_t v = w.empty() ? 0 : w[0];
    if (w.size() > 1) v |= static_cast<uint64_t>(w[1]) << 32;
    port = static_cast<T>(v);
}
template <std::size_t N>
void set_port(VlWide<N>& port, const Word& w) {
    for (std::size_t i = 0; i < N; ++i) port[i] = i < w.size() ? w[i] : 0;
}
template <typename T>
std::string hex_of(const T& port) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%" PRIx64, static_cast<uint64_t>(port));
    return buf;
}
template <std::size_t N>
std::string hex_of(const VlWide<N>& port) {
    std::string out;
    char buf[16];
    for (std::size_t i = N; i-- > 0;) {
        std::snprintf(buf, sizeof buf, out.empty() ? "%x" : "%08x", port[i]);
        if (!out.empty() || port[i] != 0 || i == 0) out += buf;
    }
    return out;
}
// stream_fire is in graph order, so the highest set bit is the most downstream stream that moved.
template <typename T>
int last_set_bit(const T& v) {
    const uint64_t x = static_cast<uint64_t>(v);
    return x ? 63 - __builtin_clzll(x) : -1;
}
template <std::size_t N>
int last_set_bit(const VlWide<N>& v) {
    for (std::size_t i = N; i-- > 0;)
        if (v[i]) return static_cast<int>(i * 32 + 31 - __builtin_clz(v[i]));
    return -1;
}

[[noreturn]] void fail(const std::string& message) {
    std::fprintf(stderr, "agq-tb: error: %s\n", message.c_str());
    std::fflush(stdout);
    std::exit(3);
}

}  // namespace

int main(int argc, char** argv) {
    std::string input_path;
    uint64_t expected = 0, watchdog = 10000, max_cycles = 0, seed = 0;
    double stall_prob = 0.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string key = argv[i], value = argv[i + 1];
        if (key == "--input") input_path = value;
        else if (key == "--outputs") expected = std::stoull(value);
        else if (key == "--stall-prob") stall_prob = std::stod(value);
        else if (key == "--seed") seed = std::stoull(value);
        else if (key == "--watchdog") watchdog = std::stoull(value);
        else if (key == "--max-cycles") max_cycles = std::stoull(value);
        else fail("unknown option " + key);
    }
    std::vector<Word> inputs;
    std::ifstream in(input_path);
    if (!in) fail("cannot read input file " + input_path);
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) inputs.push_back(parse_hex(line));

    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(argc, argv);
    auto top = std::make_unique<Vagq_top>(context.get());
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution stall(stall_prob);
    const bool stalls = stall_prob > 0.0;  // without stalls no random number is drawn per cycle

    top->ap_rst_n = 0;
    top->in0_V_TVALID = 0;
    top->out0_V_TREADY = 0;
    for (int i = 0; i < 2 * kResetCycles; ++i) {
        top->ap_clk = i & 1;
        top->eval();
    }
    top->ap_rst_n = 1;

    size_t next_in = 0;
    uint64_t received = 0, cycle = 0, last_move = 0;
    int last_stream = -1;
    while (received < expected) {
        // Drive this cycle's inputs while the clock is low, then sample the handshakes that the
        // rising edge will complete.
        top->ap_clk = 0;
        top->in0_V_TVALID = next_in < inputs.size();
        if (next_in < inputs.size()) set_port(top->in0_V_TDATA, inputs[next_in]);
        top->out0_V_TREADY = !(stalls && stall(rng));
        top->eval();
        const bool in_fire = top->in0_V_TVALID && top->in0_V_TREADY;
        const bool out_fire = top->out0_V_TVALID && top->out0_V_TREADY;
        const int moved = last_set_bit(top->stream_fire);
        if (out_fire) {
            std::printf("O %" PRIu64 " %s\n", cycle, hex_of(top->out0_V_TDATA).c_str());
            ++received;
        }
        top->ap_clk = 1;
        top->eval();
        if (in_fire) ++next_in;
        if (moved >= 0) {
            last_move = cycle;
            last_stream = moved;
        } else if (cycle - last_move > watchdog) {
            fail("stall: no AXI stream moved for " + std::to_string(watchdog) + " cycles (cycle " +
                 std::to_string(cycle) + ", " + std::to_string(received) + "/" + std::to_string(expected) +
                 " outputs, " + std::to_string(next_in) + "/" + std::to_string(inputs.size()) +
                 " inputs); last stream that moved: " +
                 (last_stream >= 0 ? kStreamNames[last_stream] : std::string("none")) + " at cycle " +
                 std::to_string(last_move));
        }
        if (max_cycles && cycle >= max_cycles)
            fail("no result after " + std::to_string(max_cycles) + " cycles (" + std::to_string(received) +
                 "/" + std::to_string(expected) + " outputs); last stream that moved: " +
                 (last_stream >= 0 ? kStreamNames[last_stream] : std::string("none")));
        ++cycle;
    }
    std::printf("D %" PRIu64 "\n", cycle);
    top->final();
    return 0;
}
