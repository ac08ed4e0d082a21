// The local Hardhat node coordinator/hardhat.py starts: its chain id comes from the
// environment, so two nodes can stand for two chains.  Blocks are mined on each transaction
// (automine), as the tests expect; a test that needs a pending transaction turns it off over RPC.
module.exports = {
  networks: {
    hardhat: {
      chainId: Number(process.env.TESSERA_CHAIN_ID || "31337"),
      hardfork: "cancun",
      accounts: { count: 4 },
    },
  },
};
