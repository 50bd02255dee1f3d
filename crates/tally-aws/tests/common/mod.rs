pub mod fault_proxy;
