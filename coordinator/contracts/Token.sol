// SPDX-License-Identifier: Apache-2.0
// A plain ERC-20 (EIP-20) for local chains: the demo's and the tests' USDT-like (6 decimals) and
// 18-decimal tokens.  Never deployed by Tessera on a public chain: payouts there go to the
// issuers' contracts listed in coordinator/mainnets.toml.
//
// Beside EIP-20 it has one thing real stablecoins have: the issuer can block an address
// (USDT's blacklist, USDC's blocklist), so that a transfer mined on chain reverts with a reason
// — what the tracker must report as a failed payout.
pragma solidity 0.8.28;

contract Token {
    string public name;
    string public symbol;
    uint8 public immutable decimals;
    uint256 public totalSupply;
    address public immutable issuer;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    mapping(address => bool) public blocked;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor(string memory name_, string memory symbol_, uint8 decimals_, uint256 supply) {
        name = name_;
        symbol = symbol_;
        decimals = decimals_;
        issuer = msg.sender;
        totalSupply = supply;
        balanceOf[msg.sender] = supply;
        emit Transfer(address(0), msg.sender, supply);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _move(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        require(allowed >= value, "Token: allowance exceeded");
        if (allowed != type(uint256).max) {
            allowance[from][msg.sender] = allowed - value;
        }
        _move(from, to, value);
        return true;
    }

    function setBlocked(address account, bool isBlocked) external {
        require(msg.sender == issuer, "Token: only the issuer blocks");
        blocked[account] = isBlocked;
    }

    function _move(address from, address to, uint256 value) private {
        require(to != address(0), "Token: transfer to the zero address");
        require(!blocked[from] && !blocked[to], "Token: address blocked");
        uint256 held = balanceOf[from];
        require(held >= value, "Token: balance too low");
        unchecked {
            balanceOf[from] = held - value;
        }
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }
}
