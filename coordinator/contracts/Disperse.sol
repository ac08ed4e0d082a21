// SPDX-License-Identifier: Apache-2.0
// Disperse: one transaction paying many recipients (issue 12, item 6b) — ether with
// `disperseEther`, an ERC-20 with `disperseToken` (the sender approves this contract first).
//
// Minimal on purpose.  Every key-share node decodes each leg of a batch before it signs
// (signer/chains/disperse.py) and the policy decides each leg and the total, so the contract
// must do nothing that the calldata does not say: no owner, no storage, no fees, no receive or
// fallback.  It never holds funds: `disperseEther` requires msg.value to be exactly the sum of
// the legs, and a token moves straight from the sender to each recipient.  Any failed leg
// reverts the whole batch: a batch is paid entirely or not at all.
pragma solidity 0.8.28;

contract Disperse {
    uint256 public constant MAX_LEGS = 1000;

    // transferFrom(address,address,uint256)
    bytes4 private constant TRANSFER_FROM = 0x23b872dd;

    function disperseEther(address[] calldata recipients, uint256[] calldata values)
        external
        payable
    {
        _checkLegs(recipients, values);
        uint256 total = 0;
        for (uint256 i = 0; i < values.length; i++) {
            total += values[i]; // checked: an overflowing sum reverts
        }
        require(total == msg.value, "Disperse: msg.value is not the sum of the values");
        for (uint256 i = 0; i < recipients.length; i++) {
            address to = recipients[i];
            uint256 value = values[i];
            bool ok;
            // No return data is copied: a recipient cannot make the batch pay for a large one.
            assembly {
                ok := call(gas(), to, value, 0, 0, 0, 0)
            }
            require(ok, "Disperse: an ether leg failed");
        }
    }

    function disperseToken(
        address token,
        address[] calldata recipients,
        uint256[] calldata values
    ) external {
        // A call to an address without code succeeds and returns nothing: it would "pay" all.
        require(token.code.length > 0, "Disperse: the token is not a contract");
        _checkLegs(recipients, values);
        for (uint256 i = 0; i < recipients.length; i++) {
            (bool ok, bytes memory returned) = token.call(
                abi.encodeWithSelector(TRANSFER_FROM, msg.sender, recipients[i], values[i])
            );
            if (!ok && returned.length > 0) {
                // the token's own reason (allowance exceeded, address blocked …)
                assembly {
                    revert(add(returned, 32), mload(returned))
                }
            }
            // true, or no data at all from tokens whose transferFrom returns nothing (USDT)
            bool paid = returned.length == 0;
            if (returned.length >= 32) {
                paid = abi.decode(returned, (bool)); // reverts unless the word is 0 or 1
            }
            require(ok && paid, "Disperse: a token leg failed");
        }
    }

    function _checkLegs(address[] calldata recipients, uint256[] calldata values) private view {
        require(recipients.length == values.length, "Disperse: recipients and values differ");
        require(recipients.length > 0, "Disperse: no legs");
        require(recipients.length <= MAX_LEGS, "Disperse: too many legs");
        for (uint256 i = 0; i < recipients.length; i++) {
            require(recipients[i] != address(0), "Disperse: a leg to the zero address");
            require(recipients[i] != address(this), "Disperse: a leg to this contract");
        }
    }
}
