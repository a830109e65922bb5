fn main() {
    println!("{}", msfilter::datapath::OBJECT.len());
}
